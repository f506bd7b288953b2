"""The ``alarm-bridge`` command, kept outside ``app`` so that the web package's import contract stays
whole: this package may load the sandbox, the receiver and ``requests``; nothing of ours imports it."""
