"""Base algorithms, one file each: the losses as pure functions, in update order."""
