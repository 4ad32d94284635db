#!/bin/sh
# Checks that Python 3 is available to command units.
python3 -c 'import sys; assert sys.version_info >= (3, 8); print(sys.version)'
