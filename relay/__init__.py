"""Cisco XDR relay for the Threatscore threat-intelligence service."""
