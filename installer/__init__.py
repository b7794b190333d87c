"""Writing the image to disks, PXE, and the local lab."""
