from moeplan.cli.app import main

main()
