"""Data curation for WolofMRL: sources → normalise → pair → dedupe → voice → filter → split → shards.

Entry point: ``python -m wolofmrl.curation --config train/configs/data/offline.yaml``.
TTS for Wolof and French (also used by the demo): `wolofmrl.curation.voice`.
"""
