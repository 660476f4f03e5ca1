"""Simulated sensor fleets, real-event replays, fault injection and drills (issue #7).

scenario   TOML scenario files, validated (errors name the key)
hydrology  rain → linear-reservoir runoff → lag-and-route downstream → rating curve
replay     parsers for the 持世寺 10-minute CSV, MLIT 川の水位情報 rows and area_info snapshots
reporting  危機管理型水位計 report-by-exception
faults     per-device, per-window fault injection, with the effects ingest should show
fleet      the engine: devices on a virtual clock, time mapping, pacing, publishing
transport  a lean MQTT 3.1.1 QoS 1 publisher (and an adapter to sonae.mqtt.MqttClient)
progress   live display and end summary
manager    start/stop/status for the API's operator endpoints
command    `sonae simulate`
demo       the small demo river of `sonae run --simulate`
"""
