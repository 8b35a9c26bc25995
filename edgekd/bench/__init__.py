"""`edgekd bench`: latency, throughput, memory and power of teachers and students, each measurement in its own
subprocess. Importing this package pulls in neither torch nor any inference engine."""
