#!/bin/sh
# Burns CPU until killed.
while :; do :; done
