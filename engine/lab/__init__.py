"""Practice labs: reproduce a pitfall's symptoms on this machine, for training and tests."""
