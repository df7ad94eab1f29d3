"""A local, signature-checking stand-in of the cloud APIs, for demos and tests.

`volcengine` holds the behaviour of Volcengine RTC Conversational AI (I/O-free: task table,
validation, fault decisions); `server` is the HTTP/1.1 shell around it (`EmulatorServer`,
`run_emulator`).
"""
