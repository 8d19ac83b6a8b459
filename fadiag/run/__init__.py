"""Running the families over many checkpoints: the sweep and its journal, worker pools and their fork
server, thread choice, spooled observations and atomic writes."""
