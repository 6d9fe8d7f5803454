"""The Neural Engine cost model: op records from Core ML programs, priced per device."""
