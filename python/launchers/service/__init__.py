"""Services: a model kept served by replica jobs behind one front (vllm-router behind an
authenticating proxy), past any single job's time limit. See ``manage`` for the
operations, ``decide`` for the controller's rules, ``front`` for what runs on the front.
"""
