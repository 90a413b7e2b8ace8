"""One ``APIRouter`` per resource: health, search, products."""
