"""The deploy-time migration resource: its code asset (asset.py) and its CDK wiring."""
