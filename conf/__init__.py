# Makes conf/ the package `ftlab.conf`, so an installed ftlab (editable or wheel) finds these files.
