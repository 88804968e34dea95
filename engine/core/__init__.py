"""Stage 0, imported by everything: errors, events and the cancel token, atomic writes,
user folders, bundled resources, file kinds (``formats``), file digests, names made safe
to hash, write and print (``text``), and the torch device choice (``device``, which
imports torch only inside its functions). Nothing in ``core`` imports another Loupe
package."""
