"""``python -m tools …`` from a clone: the same commands as ``lynx-edge probe …``.

The probe toolkit lives in the package (``lynx_edge.lab``, driven by ``lynx-edge probe``) so
that a pip install can make probes; this wrapper keeps the GPU-box scripts and old notes working.
"""

from lynx_edge.cli.probe import probe

if __name__ == "__main__":
    probe(prog_name="python -m tools")
