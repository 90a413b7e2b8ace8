"""Query model, query encoding, weighted fusion of the image and text indices, filters and pages."""
