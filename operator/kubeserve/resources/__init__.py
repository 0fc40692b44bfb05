"""Pure builders, one module per child kind. They take validated input and return dicts."""
