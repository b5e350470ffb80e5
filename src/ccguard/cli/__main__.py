from ccguard.cli import main

main()
