//! capisan: drive CPython's C API under an ownership model and name what breaks.
