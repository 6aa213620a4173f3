"""A gRPC service without generated code: a generic handler for
demo.Greeter/SayHello on raw bytes. Names ending in "missing" get NOT_FOUND.

usage: greeter.py serve PORT | greeter.py client PORT  (client: one call per
stdin line naming the person; prints "ok" or the status code name)"""
import sys
from concurrent import futures

import grpc


def say_hello(request, context):
    name = request.decode()
    if name.endswith("missing"):
        context.abort(grpc.StatusCode.NOT_FOUND, f"no greeting for {name}")
    return f"hello {name}".encode()


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "demo.Greeter",
        {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)},
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def client(port):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/demo.Greeter/SayHello")
    for line in sys.stdin:
        try:
            call(line.strip().encode(), timeout=10)
            print("ok", flush=True)
        except grpc.RpcError as e:
            print(e.code().name, flush=True)


if __name__ == "__main__":
    {"serve": serve, "client": client}[sys.argv[1]](int(sys.argv[2]))
