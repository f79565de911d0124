"""Fixtures for the project's own tests.

pytester runs the suites in-process; it removes modules first imported during a run, and
re-importing torch._dynamo or torchvision registers their native ops twice (an abort), so
both are imported up front, outside every run.
"""
import torch._dynamo  # noqa: F401
import torchvision  # noqa: F401
