"""Local stand-ins for the outside world: real servers on localhost, never imported by product code."""
