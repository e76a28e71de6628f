"""An embedded stand-in for the AWS services and third parties the reference architecture talks to."""
