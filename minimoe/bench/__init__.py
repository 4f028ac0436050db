"""Benchmarks: `python -m minimoe.bench [--quick] [--only GROUP] [--out FILE]`.

Speed targets are checked here, never by timed tests. Each case is timed as a median over
repetitions; where PyTorch is installed, the same work runs in PyTorch eager on the same threads,
side by side in the same run, and the ratio is printed (the machine's clock moves between runs, so
only side-by-side ratios mean anything).
"""
