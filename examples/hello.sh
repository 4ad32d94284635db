#!/bin/sh
# A trivial example unit: prints and passes.
echo "hello from $RUNNER_UNIT_ID (attempt $RUNNER_ATTEMPT)"
