# Allocates and touches memory in 4 MiB steps until the sandbox's memory cgroup kills it.
import sys, time
chunks = []
for i in range(512):
    b = bytearray(4 * 1024 * 1024)
    for j in range(0, len(b), 4096):
        b[j] = 1
    chunks.append(b)
    print("allocated", (i + 1) * 4, "MiB", flush=True)
print("survived", flush=True)
time.sleep(30)
