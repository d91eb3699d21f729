"""Guest programs (assembly per arch) and the scenario files that place them."""
