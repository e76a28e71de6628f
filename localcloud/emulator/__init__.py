"""The embedded AWS emulator: moto as a server thread, with the fixes this app needs to run faithfully."""
