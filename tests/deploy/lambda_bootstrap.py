"""Runs one handler of an asset folder the way Lambda's python3.13 runtime does, and nothing more.

Started as ``python3.13 -I -S lambda_bootstrap.py ASSET PACKAGES HANDLER TIMEOUT RESULT < event.json``:
-I -S leave only the standard library on sys.path; this adds the asset folder (Lambda's
/var/task) and PACKAGES (boto3 and its dependencies, as the runtime provides them). It writes
the handler's answer (or Lambda's error document) and every imported module file found outside
those three places to RESULT, as JSON. Not imported by the tests: they run it as a script.
"""

import importlib
import json
import sys
import sysconfig
import time

asset, packages, handler_name, timeout, result_path = sys.argv[1:6]
sys.path[0:0] = [asset, packages]
deadline = time.monotonic() + float(timeout)


class Context:
    function_name = handler_name
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))


event = json.load(sys.stdin)
module_name, function_name = handler_name.rsplit(".", 1)
try:
    answer = getattr(importlib.import_module(module_name), function_name)(event, Context())
    failed = False
except Exception as error:
    answer = {"errorMessage": str(error), "errorType": type(error).__name__}
    failed = True
allowed = (asset, packages, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
loaded = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
outside = sorted({path for path in loaded if isinstance(path, str) and not path.startswith(allowed)} - {__file__})
with open(result_path, "w", encoding="utf-8") as result:
    json.dump({"answer": answer, "failed": failed, "outside": outside}, result)
