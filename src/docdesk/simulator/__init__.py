"""A stand-in for ONLYOFFICE Docs, faithful to its protocol.

It serves the Document Server's endpoints and a small working editor, so
docdesk runs with no Document Server at all, and so any integration can test
its callback handling offline.
"""

from docdesk.simulator.app import create_simulator_app
from docdesk.simulator.config import SimulatorSettings
from docdesk.simulator.sessions import Simulator

__all__ = ["Simulator", "SimulatorSettings", "create_simulator_app"]
