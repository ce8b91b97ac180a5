"""A small command-line agent for the ``cli/<name>`` tests: reads the conversation on stdin
(or takes it as arguments) and prints an answer, as a real agent (``claude -p``, ``aider``)
would. ``--mode`` picks a behaviour:

    echo     "agent heard: <input>" (the default)
    lines    three lines, 0.2 s apart (line-by-line streaming)
    json     the number of messages and the last one's role, from JSON input
    arg      its arguments after --mode arg, joined
    pwd      its working folder, then whether PATH and AGENT_FLAG are set and OPENAI_API_KEY is not
    council  a council member: a ranking when asked to rank, else an answer
    sleep    starts a grandchild, prints its pid, then both sleep 60 s (the timeout kills both)
    fail     a line on stderr, exit status 3
    flood    2 MB on stdout
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    mode = args[1] if len(args) > 1 and args[0] == "--mode" else "echo"
    if mode == "arg":
        print(" ".join(args[2:]))
        return 0
    data = sys.stdin.read()
    if mode == "echo":
        print(f"agent heard: {data}")
    elif mode == "lines":
        for i in range(3):
            print(f"line {i + 1}", flush=True)
            time.sleep(0.2)
    elif mode == "json":
        body = json.loads(data)
        print(f"{len(body['messages'])} messages, last from {body['messages'][-1]['role']}")
    elif mode == "pwd":
        print(os.getcwd())
        print("PATH" in os.environ, os.environ.get("AGENT_FLAG"),
              "OPENAI_API_KEY" in os.environ)
    elif mode == "council":
        if "FINAL RANKING" in data:
            print("Both are fine.\nFINAL RANKING:\n1. Response A\n2. Response B")
        else:
            print("The agent's opinion: 4")
    elif mode == "sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
    elif mode == "fail":
        print("partial answer")
        print("something went wrong in the agent", file=sys.stderr)
        return 3
    elif mode == "flood":
        sys.stdout.write(("x" * 1023 + "\n") * 2048)
    return 0


if __name__ == "__main__":
    sys.exit(main())
