import os

AGENT_NAME = "WALinuxAgent"
AGENT_VERSION = '2.2.32'
