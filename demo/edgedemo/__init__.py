"""The edge demo: the OpenYurt + Fluid scenario end to end on one machine (see ``main``)."""
