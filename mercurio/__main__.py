from mercurio.cli import main

main()
