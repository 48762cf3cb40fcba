"""A triggered job: runs on its schedule (see settings.job) or on demand."""
import os
import sys

print(f"report run {os.environ.get('WEBJOBS_RUN_ID')} with arguments {sys.argv[1:]}")
print("this line goes to stderr as ERROR", file=sys.stderr)
