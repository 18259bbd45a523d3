"""The MQTT bridge: tempctl's miners as Home Assistant devices (issue 22).

An integration beside the Prometheus exporter (tempctl/daemon/metrics.py): a daemon
observer that hands each poll to its own thread, which publishes Home Assistant discovery,
state and availability through paho-mqtt. ``discovery`` builds the payloads (no I/O),
``bridge`` talks to the broker, ``controls`` carries changes made from Home Assistant to
the daemon's loop thread. Nothing here is imported unless TEMPCTL_MQTT_URL is set.
"""
