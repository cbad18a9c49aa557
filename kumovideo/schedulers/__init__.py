from .noise_schedule import kumo_alphas_cumprod
from .scheduling_kumo_ddim import KumoDDIMScheduler
from .scheduling_kumo_lcm import KumoLCMScheduler

__all__ = ["KumoDDIMScheduler", "KumoLCMScheduler", "kumo_alphas_cumprod"]
