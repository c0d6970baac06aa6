"""Every change the router makes to the internals of pynetdicom, in one place."""
