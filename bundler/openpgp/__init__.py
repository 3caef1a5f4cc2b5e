"""OpenPGP shared by kinds: checking upstream signatures with gpgv, and the enclave's own key."""
