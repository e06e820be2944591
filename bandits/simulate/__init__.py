"""Simulator for the bandit policies: ``python -m bandits.simulate --help``.

Environments (true CTRs, arrivals, members, position bias, click draws) live in
:mod:`bandits.simulate.environments`; what picks slates lives in
:mod:`bandits.simulate.recommenders`; :mod:`bandits.simulate.runner` drives one through the
other over many seeds. Nothing here runs at import time.
"""
