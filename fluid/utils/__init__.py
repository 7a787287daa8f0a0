"""The import paths of earlier fluid versions, kept working.

New code imports from ``fluid`` directly.
"""
