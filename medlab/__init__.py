"""Shared code for the lab scripts: errors and run folders, image I/O, data folders,
synthetic demo data, plots and the VGG-style model. The scripts at the repository root
import from here so that no logic is written twice."""
import os

# TensorFlow's C++ start-up chatter (no CUDA driver, CPU instruction sets) hides what matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
