"""The scheduler: the clock side. Due fires become commands; executors run them."""
