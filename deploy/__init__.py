"""Operator tools, never deployed: `make deploy` (python -m deploy deploy) puts the relay on Google
Cloud Functions with `gcloud`; `make register` (python -m deploy register) registers its module type
in XDR. Settings come from the environment and from `deploy.env` (see deploy.env.example)."""
