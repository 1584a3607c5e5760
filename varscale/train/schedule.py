"""The trainer's learning-rate schedules: ``varscale.schedule``, the one implementation (a
torch-free leaf module that the analysis half reads too, for the loss-curve law)."""
from varscale.schedule import WARMUP_START, Schedule, areas, history, peak_lr, schedule_of_cell

__all__ = ["WARMUP_START", "Schedule", "areas", "history", "peak_lr", "schedule_of_cell"]
