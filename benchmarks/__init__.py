"""Benchmarks, in one place: the runner against psql (runner.py), the deploy-time Lambda asset
(lambda_asset.py) and the synth (synth.py). They print figures and never fail on one."""
