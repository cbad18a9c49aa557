from .errors import KumoInputError

__all__ = ["KumoInputError"]
