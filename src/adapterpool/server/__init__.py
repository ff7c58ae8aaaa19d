"""The pool server: FastAPI app and its runner."""
