"""The built-in, deterministic synthetic demo data: chest X-rays with lung masks (`xray`) and the
two-class skin and bone sets (`skin_bone`), with what they share (`common`)."""
