"""Benchmarks (``python -m crossmodal.bench``; outside CI's pass/fail).

Every ``bench_*.py`` module here has a ``main()`` that prints its measurements and ratios.
"""
