"""Model files shipped inside lynx-edge (see README.md beside this file for provenance)."""
