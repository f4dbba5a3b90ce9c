# Connects to the kernel's agent socket (CLOVE_SOCKET) and waits until the server closes.
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["CLOVE_SOCKET"])
s.sendall(b"hello\n")
s.recv(16)
print("done", flush=True)
